"""Wing: running the notebooks and rendering the report, the benchmark, TensorBoard screenshots. No notebook imports it."""
