"""The app's icons, stylesheet and sample data, a package so an installed wheel ships them too."""
