"""`marlscale report`: run directories (train, sweep, league) as the paper's figures, tables and
a report.md (`report.py`), from the two tables `runs.py` reads and `aggregate.py` reduces over
seeds; `figures.py` draws them."""
