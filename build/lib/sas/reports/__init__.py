"""Reports: tables, plots, feature inspection."""
