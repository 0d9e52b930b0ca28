"""Task sets: the record schema, the M3-HumanEval builder, loaders for public sets, and the CLI."""
