"""Steering vectors in formats other tools run: GGUF control vectors for llama.cpp.

``sas.export.gguf`` writes and reads the files (``save_gguf``, ``load_gguf``, also ``sas.save_gguf``/``sas.load_gguf``),
``sas.export.llamacpp`` applies one to a llama-cpp-python model, ``sas.export.cli`` is ``sas export``.
Nothing is imported here, so that ``sas --help`` stays light.
"""
