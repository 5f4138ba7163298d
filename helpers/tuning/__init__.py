"""Wing: tuning LeNet-5 with Hyperopt (space, budget-aware search, trials store, tables and charts, studies, TPE vs random, Ray Tune, the reflections' runner)."""
