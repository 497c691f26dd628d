"""Console app for the task store."""
