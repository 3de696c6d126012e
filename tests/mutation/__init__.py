"""Mutation testing of the SQL rules in sql/functions: `python -m tests.mutation --help`.

catalogue.py holds the mutants, record.py is the pytest plugin through which the runner
(__main__.py) learns which test failed first.
"""
