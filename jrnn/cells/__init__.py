"""Cell kinds: one module each (params class, `init`, `project`, `recur`)."""
