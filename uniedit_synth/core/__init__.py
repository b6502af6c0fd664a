"""The contracts: records, errors, config models, prompts and the bundled pipelines (the lowest layer)."""
