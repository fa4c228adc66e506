# linkd is pure Python: one stage, the package and its runtime dependencies only.
FROM python:3.11-slim
WORKDIR /opt/linkd
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY linkd ./linkd
RUN pip install --no-cache-dir .
VOLUME /var/lib/linkd
EXPOSE 9092 8090
ENTRYPOINT ["linkd"]
CMD ["serve", "--data-dir", "/var/lib/linkd", "--listener", "0.0.0.0:9092", "--admin", "0.0.0.0:8090"]
