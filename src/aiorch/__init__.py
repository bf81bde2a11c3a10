"""aiorch: one observable endpoint for Kimi-K2-Thinking and Qwen Coder."""
