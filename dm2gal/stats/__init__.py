"""Statistics of mass fields: shared types and checks (base), the Pylians reference (pylians) and
the torch implementation used by reports and validation (fast)."""
