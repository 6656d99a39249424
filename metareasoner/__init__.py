"""The metareasoner: the NSE penalty (MATH.md section 3) and blame methods (sections 5, 7)."""
