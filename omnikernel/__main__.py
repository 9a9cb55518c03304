"""`python -m omnikernel -f CONNECTION_FILE`: what the kernelspec runs."""

from .kernelapp import OmniKernelApp

if __name__ == "__main__":
    OmniKernelApp.launch_instance()
