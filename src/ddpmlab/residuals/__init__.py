"""ddpmlab.residuals: the chi-squared check of eps - eps_theta."""
