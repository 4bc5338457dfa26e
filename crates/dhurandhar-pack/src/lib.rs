//! dhurandhar-pack (under construction)
