"""ddpmlab.reporting: the report and the experiment comparison."""
