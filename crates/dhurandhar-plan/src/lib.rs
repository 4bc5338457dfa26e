//! dhurandhar-plan (under construction)
