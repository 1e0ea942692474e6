"""Delivery channels for alerts: a JSON webhook and plain-text e-mail over SMTP.

Each returns "ok", "skipped" (channel not configured or nobody to tell) or a short error text, so
one broken channel never hides the other.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import httpx

from consult_api.alerts.service import Notice
from consult_api.config import Settings

TIMEOUT_SECONDS = 10.0


def send_webhook(url: str | None, notice: Notice) -> str:
    if not url:
        return "skipped"
    try:
        response = httpx.post(url, json=notice.payload(), timeout=TIMEOUT_SECONDS)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"


def send_email(settings: Settings, notice: Notice) -> str:
    if not settings.smtp_host or not notice.emails:
        return "skipped"
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(notice.emails)
    message["Subject"] = notice.subject
    message.set_content(notice.body)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_SECONDS) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_username and settings.smtp_password:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"


def deliver(settings: Settings, notice: Notice) -> dict[str, str]:
    return {
        "webhook": send_webhook(settings.alert_webhook_url, notice),
        "email": send_email(settings, notice),
    }
