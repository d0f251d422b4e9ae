"""Output defences of the victim service and the owner's verification tools."""
