"""Edit methods over a shared DDIM trajectory: one module per edit."""
