"""uWSGI entry point: module = labstats.viewer.wsgi:app"""

from labstats.viewer import create_app

app = create_app()
