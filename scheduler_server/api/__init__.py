"""JobService by concern: one module per group of RPCs, all on :class:`.base.Servicer`."""
