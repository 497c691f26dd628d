"""Console app ``todo`` for the task store, built on taskcore's public API only."""
