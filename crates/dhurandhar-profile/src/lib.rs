//! dhurandhar-profile (under construction)
