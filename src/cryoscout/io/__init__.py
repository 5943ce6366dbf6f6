"""Readers and writers for the files microscopes and cryo-EM programs exchange."""
