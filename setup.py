"""Which packages the wheel holds (everything else is in pyproject.toml).

`tl_core` and every subpackage under it are found, so a new subpackage ships without an edit
here. The web app stays at the repository root (`streamlit run app.py` in a clone) and is
mapped into the wheel as `tl_core/_app/` (app.py, pages/*.py, .streamlit/config.toml), where
`tl-lab app` finds it. pyproject.toml cannot declare found packages and mapped ones at once,
hence this file.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

APP = "tl_core._app"


class BuildPy(build_py):
    """The repository root is mapped as the app's package: of its modules, ship app.py only."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if package != APP or m[1] == "app"]


setup(
    packages=[*find_packages(include=["tl_core", "tl_core.*"]), APP, f"{APP}.pages"],
    package_dir={APP: ".", f"{APP}.pages": "pages"},
    package_data={APP: [".streamlit/config.toml"]},
    cmdclass={"build_py": BuildPy},
)
