//! dhurandhar-checkpoint (under construction)
