"""The data plane: loaders turn model versions into servables (the server comes next)."""
