"""Tasks: what the CLI commands do — train, evaluate, cv, pretrain, explain, export, predict."""
