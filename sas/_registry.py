"""A registry of plugins (the methods'): entries by name, registered by the modules of one folder,
which are all imported the first time the registry is read (so adding an entry is adding a file)."""

from __future__ import annotations

import importlib
import pkgutil


class Registry(dict):
    """``{name: entry}`` filled by the modules of ``package`` (all but ``skip``) on first read."""

    def __init__(self, kind: str, package: str, skip=("registry",)):
        super().__init__()
        self.kind, self.package, self.skip, self.loaded = kind, package, tuple(skip), False

    def all(self) -> dict:
        if not self.loaded:
            self.loaded = True
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(pkg.__path__):
                if info.name not in self.skip:
                    importlib.import_module(f"{self.package}.{info.name}")
        return dict(self)

    def get_entry(self, name: str):
        entries = self.all()
        if name not in entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(sorted(entries))}")
        return entries[name]
