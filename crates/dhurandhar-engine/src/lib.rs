//! dhurandhar-engine (under construction)
