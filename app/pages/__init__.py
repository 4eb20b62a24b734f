"""The main window's pages, one module each; every page is handed the shared `AppModel`."""
