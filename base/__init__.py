"""What every package shares: the error tree, the SQL store and its migrations, leases."""
