//! dhurandhar-kv (under construction)
