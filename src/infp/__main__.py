from infp.cli import main

raise SystemExit(main())
