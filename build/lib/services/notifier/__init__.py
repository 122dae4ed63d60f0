"""The notifier: stores alerts in PostgreSQL and serves them to the teams."""
