"""The admin UI: a blueprint of templates and static files. It calls the control plane's
services, never the database directly."""

from flask import Blueprint, render_template

web = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static")


@web.get("/")
def index():
    return render_template("index.html")
