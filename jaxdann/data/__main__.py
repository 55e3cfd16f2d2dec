"""``python -m jaxdann.data``: what a dataset folder holds (:func:`jaxdann.data.explore.main`)."""

from jaxdann.data.explore import main

if __name__ == "__main__":
    raise SystemExit(main())
