"""A module holding an app under another name, for import_app's ``module:attribute`` form."""

import azure.functions as func

custom = func.FunctionApp()
not_an_app = object()
