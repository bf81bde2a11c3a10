"""Measurements that take minutes and print figures: run by hand or `make`, never by pytest."""
