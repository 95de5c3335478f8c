"""panicbutton: panic-button alerts for rooms where people work alone with clients."""

__version__ = "0.1.0"
