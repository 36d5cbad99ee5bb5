"""Feature flags: flag providers behind ``deployflow.providers.base.FlagProvider``."""
