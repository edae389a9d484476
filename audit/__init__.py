"""Harness: framework subjects, grading, contracts, sweeps, report and CLI of the BCE audit."""
