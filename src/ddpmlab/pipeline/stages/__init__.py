"""One module per dvc.yaml stage: `main(argv)` parses paths and flags, reads its params, calls the core, writes outputs."""
