"""The metareasoner: the NSE penalty (docs/FORMULATION.md section 3) and blame methods (sections 5, 7)."""
