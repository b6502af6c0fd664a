"""The paper's method as pure functions: answers, the instruction plan, reasoning, consistency, cascade, masks, input screen."""
