"""Image data: reading data set folders, decoding images safely, gathering and curating sets."""
