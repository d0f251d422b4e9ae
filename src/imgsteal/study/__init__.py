"""The user study: questionnaire web app and its statistics."""
