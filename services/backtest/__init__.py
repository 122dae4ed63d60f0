"""Reports on a backtest: which alerts a rule file would have raised over replayed events."""
