"""Operator commands: install and upgrade, cut-over, repair, replay, audit, status. Each returns a report."""
