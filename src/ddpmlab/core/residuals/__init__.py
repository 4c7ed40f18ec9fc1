"""ddpmlab.core.residuals: the chi-squared check of eps - eps_theta, its statistics and its simulator."""
