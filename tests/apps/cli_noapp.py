"""Defines neither `application` nor `app`."""

something_else = 1
