"""`mpqdm deploy`: every stage from a UNet folder to a board binary and a report, in one folder that
an interrupted run resumes (stages.py), checked against PyTorch (check.py), reported (report.py)."""
