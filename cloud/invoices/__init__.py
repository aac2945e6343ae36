"""GST tax invoices and credit notes (CGST Rule 46/53): issue, number, render."""
