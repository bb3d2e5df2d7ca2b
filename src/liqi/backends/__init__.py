"""Where jobs run: the Backend seam (base.py) and its implementations (local.py)."""
